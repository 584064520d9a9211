//! The built-in tools: argument validation, each file tool in process on a
//! temporary workspace, and calls through the real sandbox.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codexos_engine::tools::{
    ArgumentError, BuiltinTool, SandboxSettings, ToolError, ToolExecution, ToolInvocation, ToolResult, execute,
    execute_in_process, for_model, parse_call,
};
use codexos_sandbox::{Limits, NetworkPolicy, ViolationKind};
use pretty_assertions::assert_eq;
use serde_json::json;

// ---- arguments and specs ----

fn parse_error(tool: BuiltinTool, raw: &str) -> String {
    parse_call(tool, raw).expect_err(raw).to_string()
}

#[test]
fn names_round_trip_and_specs_describe_objects_with_their_required_fields() {
    let names: Vec<&str> = BuiltinTool::ALL.iter().map(|tool| tool.name()).collect();
    assert_eq!(names, ["shell", "read_file", "write_file", "apply_patch", "list_dir", "search", "http_fetch"]);
    for tool in BuiltinTool::ALL {
        assert_eq!(BuiltinTool::from_name(tool.name()), Some(tool));
        let spec = tool.spec();
        assert_eq!(spec.name, tool.name());
        assert!(spec.description.len() > 40, "{tool}: {}", spec.description);
        assert_eq!(spec.parameters["type"], "object", "{tool}");
        assert_eq!(spec.parameters["additionalProperties"], false, "{tool}");
    }
    assert_eq!(BuiltinTool::from_name("Shell"), None);
    assert_eq!(
        BuiltinTool::ReadFile.spec().parameters,
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "description": "File to read, relative to the workspace."},
                "offset": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Line to start at, counting from 1. Default: 1.",
                },
                "limit": {"type": "integer", "minimum": 1, "description": "Most lines to return. Default: 2000."},
            },
            "required": ["path"],
        })
    );
}

/// A valid value for each argument of each tool, by name.
fn sample(tool: BuiltinTool, name: &str) -> serde_json::Value {
    match (tool, name) {
        (BuiltinTool::HttpFetch, "url") => json!("https://example.com/"),
        (BuiltinTool::HttpFetch, "method") => json!("POST"),
        (BuiltinTool::HttpFetch, "headers") => json!({"accept": "text/plain"}),
        (BuiltinTool::ApplyPatch, "patch") => json!("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"),
        (_, "depth" | "max_results" | "offset" | "limit" | "timeout_seconds") => json!(3),
        (_, "include_ignored" | "case_insensitive") => json!(true),
        (_, "glob") => json!("*.rs"),
        _ => json!("some/text"),
    }
}

/// The schema and the parser come from one struct: every property the
/// schema offers is accepted, and the required ones are required.
#[test]
fn every_schema_property_is_accepted_and_every_required_one_is_needed() {
    for tool in BuiltinTool::ALL {
        let parameters = tool.spec().parameters;
        let properties = parameters["properties"].as_object().unwrap();
        let required: Vec<&str> =
            parameters["required"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()).collect();
        let all: serde_json::Map<String, serde_json::Value> =
            properties.keys().map(|name| (name.clone(), sample(tool, name))).collect();
        parse_call(tool, &serde_json::Value::Object(all.clone()).to_string())
            .unwrap_or_else(|err| panic!("{tool}: {err}"));
        for name in &required {
            let mut without = all.clone();
            without.remove(*name);
            let err = parse_error(tool, &serde_json::Value::Object(without).to_string());
            assert_eq!(err, format!("missing field `{name}`"), "{tool}");
        }
    }
}

#[test]
fn malformed_arguments_are_named_precisely() {
    assert_eq!(
        parse_error(BuiltinTool::ReadFile, "{\"path\": "),
        "arguments are not valid JSON: EOF while parsing a value at line 1 column 9"
    );
    assert_eq!(parse_error(BuiltinTool::ReadFile, "[1]"), "arguments must be a JSON object, not an array");
    assert_eq!(parse_error(BuiltinTool::ReadFile, "{}"), "missing field `path`");
    assert_eq!(parse_error(BuiltinTool::ReadFile, ""), "missing field `path`");
    assert_eq!(
        parse_error(BuiltinTool::WriteFile, r#"{"path": "a", "content": "", "foo": 1}"#),
        "unknown field `foo`, expected `path` or `content`"
    );
    assert_eq!(
        parse_error(BuiltinTool::ReadFile, r#"{"path": "a", "offset": "3"}"#),
        r#"offset: invalid type: string "3", expected u64"#
    );
    assert_eq!(parse_error(BuiltinTool::ReadFile, r#"{"path": "a", "offset": 0}"#), "offset counts lines from 1");
    assert_eq!(parse_error(BuiltinTool::Shell, r#"{"command": "  "}"#), "command must not be empty");
    assert_eq!(parse_error(BuiltinTool::ListDir, r#"{"depth": 21}"#), "depth must be between 1 and 20");
    assert_eq!(
        parse_error(BuiltinTool::HttpFetch, r#"{"url": "https://x.example", "method": "TRACE"}"#),
        "method: unknown variant `TRACE`, expected one of `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`"
    );
    // Models send empty arguments for tools without required ones.
    assert_eq!(
        parse_call(BuiltinTool::ListDir, "").unwrap(),
        ToolInvocation { tool: BuiltinTool::ListDir, arguments: json!({}) }
    );
}

#[test]
fn paths_must_stay_in_the_workspace() {
    let cases = [
        (
            BuiltinTool::ReadFile,
            r#"{"path": "/etc/passwd"}"#,
            "path must be relative to the workspace, not an absolute path: /etc/passwd",
        ),
        (
            BuiltinTool::WriteFile,
            r#"{"path": "../x", "content": ""}"#,
            "path must stay inside the workspace: ../x leads out of it",
        ),
        (
            BuiltinTool::ListDir,
            r#"{"path": "src/../../.."}"#,
            "path must stay inside the workspace: src/../../.. leads out of it",
        ),
        (
            BuiltinTool::Search,
            r#"{"pattern": "x", "path": "/"}"#,
            "path must be relative to the workspace, not an absolute path: /",
        ),
        (
            BuiltinTool::Shell,
            r#"{"command": "ls", "workdir": "../.."}"#,
            "workdir must stay inside the workspace: ../.. leads out of it",
        ),
        (
            BuiltinTool::WriteFile,
            r#"{"path": ".", "content": ""}"#,
            "path .: names the workspace itself, not a file in it",
        ),
        (
            BuiltinTool::ApplyPatch,
            r#"{"patch": "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"}"#,
            "patch is not a usable unified diff: line 1: the patch's path must be relative to the workspace, not an \
             absolute path: /etc/passwd",
        ),
    ];
    for (tool, raw, expected) in cases {
        assert_eq!(parse_error(tool, raw), expected, "{raw}");
    }
    // Going up and down again inside the workspace is fine.
    parse_call(BuiltinTool::ReadFile, r#"{"path": "src/../Cargo.toml"}"#).unwrap();
}

#[test]
fn patterns_globs_and_urls_are_checked_before_running() {
    let err = parse_error(BuiltinTool::Search, r#"{"pattern": "fn (foo"}"#);
    assert!(err.starts_with("pattern is not a valid regular expression: regex parse error"), "{err}");
    assert!(err.contains("unclosed group"), "{err}");
    let err = parse_error(BuiltinTool::Search, r#"{"pattern": "x", "glob": "src/[a"}"#);
    assert!(err.starts_with("glob is not a valid glob pattern:"), "{err}");
    assert_eq!(
        parse_error(BuiltinTool::HttpFetch, r#"{"url": "ftp://example.com/x"}"#),
        "url ftp://example.com/x cannot be fetched: the scheme is `ftp`; only http and https are fetched"
    );
    assert_eq!(
        parse_error(BuiltinTool::HttpFetch, r#"{"url": "example.com"}"#),
        "url example.com cannot be fetched: relative URL without a base"
    );
    assert_eq!(
        parse_error(BuiltinTool::HttpFetch, r#"{"url": "https://example.com", "body": "x"}"#),
        "body needs a method that takes one (POST, PUT, PATCH or DELETE)"
    );
    assert_eq!(
        parse_error(BuiltinTool::HttpFetch, r#"{"url": "https://example.com", "headers": {"bad name": "x"}}"#),
        "headers: `bad name` is not a valid header name and value"
    );
    assert!(matches!(
        parse_call(BuiltinTool::ApplyPatch, r#"{"patch": "just some text"}"#),
        Err(ArgumentError::InvalidPatch(_))
    ));
}

// ---- file tools, in process ----

fn workspace() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn run(root: &Path, tool: BuiltinTool, arguments: serde_json::Value) -> ToolResult {
    let invocation = parse_call(tool, &arguments.to_string()).unwrap();
    execute_in_process(root, &invocation)
}

#[test]
fn read_file_returns_lines_with_a_note_on_how_to_continue() {
    let ws = workspace();
    let content: String = (1..=10).map(|n| format!("line {n}\n")).collect();
    write(ws.path(), "src/a.txt", &content);
    assert_eq!(run(ws.path(), BuiltinTool::ReadFile, json!({"path": "src/a.txt"})), ToolResult::ok(content.clone()));
    assert_eq!(
        run(ws.path(), BuiltinTool::ReadFile, json!({"path": "src/a.txt", "offset": 3, "limit": 2})),
        ToolResult::ok("line 3\nline 4\n[src/a.txt: lines 3-4 of 10 shown; continue with offset 5]\n")
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::ReadFile, json!({"path": "src/a.txt", "offset": 9})),
        ToolResult::ok("line 9\nline 10\n[src/a.txt: lines 9-10 of 10 shown]\n")
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::ReadFile, json!({"path": "src/a.txt", "offset": 11})),
        ToolResult::error("offset 11 is past the end of src/a.txt, which has 10 lines")
    );
}

#[test]
fn read_file_refuses_binary_files_directories_and_missing_files() {
    let ws = workspace();
    std::fs::write(ws.path().join("image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::create_dir(ws.path().join("dir")).unwrap();
    write(ws.path(), "empty", "");
    let binary = run(ws.path(), BuiltinTool::ReadFile, json!({"path": "image.png"}));
    assert!(binary.is_error);
    assert!(
        binary.output.starts_with("image.png is a binary file (16 bytes); read_file shows text only"),
        "{}",
        binary.output
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::ReadFile, json!({"path": "dir"})),
        ToolResult::error("dir is a directory; list it with list_dir")
    );
    let missing = run(ws.path(), BuiltinTool::ReadFile, json!({"path": "nope.txt"}));
    assert!(missing.is_error);
    assert!(missing.output.starts_with("nope.txt: No such file or directory"), "{}", missing.output);
    assert_eq!(run(ws.path(), BuiltinTool::ReadFile, json!({"path": "empty"})), ToolResult::ok("[empty is empty]"));
}

#[test]
fn read_file_caps_its_output_and_says_where_to_go_on() {
    let ws = workspace();
    let line = format!("{}\n", "x".repeat(999));
    write(ws.path(), "big.txt", &line.repeat(1000));
    let result = run(ws.path(), BuiltinTool::ReadFile, json!({"path": "big.txt"}));
    assert!(!result.is_error);
    // 256 KiB of whole lines, then the note.
    assert_eq!(result.output.matches(&line).count(), 262);
    assert!(
        result.output.ends_with(
            "[big.txt: lines 1-262 of 1000 shown; continue with offset 263; the output is limited to 262144 bytes]\n"
        ),
        "{}",
        &result.output[result.output.len() - 200..]
    );
}

#[test]
fn write_file_creates_parents_and_reports_what_it_wrote() {
    let ws = workspace();
    assert_eq!(
        run(ws.path(), BuiltinTool::WriteFile, json!({"path": "a/b/c.txt", "content": "héllo\n"})),
        ToolResult::ok("wrote 7 bytes to a/b/c.txt (new file)")
    );
    assert_eq!(read(ws.path(), "a/b/c.txt"), "héllo\n");
    assert_eq!(
        run(ws.path(), BuiltinTool::WriteFile, json!({"path": "a/b/c.txt", "content": ""})),
        ToolResult::ok("wrote 0 bytes to a/b/c.txt (replaced its 7 bytes)")
    );
    assert_eq!(read(ws.path(), "a/b/c.txt"), "");
    assert_eq!(
        run(ws.path(), BuiltinTool::WriteFile, json!({"path": "a/b", "content": "x"})),
        ToolResult::error("a/b is a directory; write_file writes files")
    );
}

#[test]
fn apply_patch_modifies_creates_and_deletes_files_in_one_call() {
    let ws = workspace();
    write(ws.path(), "src/lib.rs", "fn a() {}\n\nfn b() {\n    1\n}\n\nfn c() {}\n");
    write(ws.path(), "old/gone.txt", "bye\n");
    let patch = "diff --git a/src/lib.rs b/src/lib.rs\n\
                 --- a/src/lib.rs\n\
                 +++ b/src/lib.rs\n\
                 @@ -3,3 +3,3 @@\n \
                 fn b() {\n\
                 -    1\n\
                 +    2\n \
                 }\n\
                 --- /dev/null\n\
                 +++ b/src/new.rs\n\
                 @@ -0,0 +1,2 @@\n\
                 +// new\n\
                 +fn n() {}\n\
                 --- a/old/gone.txt\n\
                 +++ /dev/null\n\
                 @@ -1 +0,0 @@\n\
                 -bye\n";
    let result = run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": patch }));
    assert_eq!(
        result,
        ToolResult::ok(
            "applied the patch:\n  modified src/lib.rs (1 hunk, +1 -1)\n  created src/new.rs (+2 -0)\n  deleted \
             old/gone.txt\n"
        )
    );
    assert_eq!(read(ws.path(), "src/lib.rs"), "fn a() {}\n\nfn b() {\n    2\n}\n\nfn c() {}\n");
    assert_eq!(read(ws.path(), "src/new.rs"), "// new\nfn n() {}\n");
    assert!(!ws.path().join("old/gone.txt").exists());
    // As with git, a directory the deletion emptied goes too.
    assert!(!ws.path().join("old").exists());
}

#[test]
fn apply_patch_that_does_not_apply_changes_nothing_and_names_the_hunk() {
    let ws = workspace();
    write(ws.path(), "a.txt", "one\ntwo\nthree\n");
    write(ws.path(), "b.txt", "alpha\nbeta\ngamma\n");
    let patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n\
                 --- /dev/null\n+++ b/c/new.txt\n@@ -0,0 +1 @@\n+new\n\
                 --- a/b.txt\n+++ b/b.txt\n@@ -1,2 +1,2 @@\n alpha\n-beta\n+BETA\n@@ -3 +3 @@\n-delta\n+DELTA\n";
    let result = run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": patch }));
    assert_eq!(
        result,
        ToolResult::error(
            "b.txt: hunk 2 of 2 (`@@ -3 +3 @@`) does not apply: none of its 1 context and removed lines occurs in \
             the file\nThe patch was not applied: no file was changed."
        )
    );
    assert_eq!(read(ws.path(), "a.txt"), "one\ntwo\nthree\n");
    assert_eq!(read(ws.path(), "b.txt"), "alpha\nbeta\ngamma\n");
    assert!(!ws.path().join("c").exists());
}

#[test]
fn apply_patch_points_at_the_line_that_differs() {
    let ws = workspace();
    write(ws.path(), "main.rs", "fn main() {\n    println!(\"hi\");\n}\n");
    let patch = "--- a/main.rs\n+++ b/main.rs\n@@ -1,3 +1,3 @@\n fn main() {\n-    println!(\"hello\");\n\
                 +    println!(\"bye\");\n }\n";
    let result = run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": patch }));
    assert_eq!(
        result,
        ToolResult::error(
            "main.rs: hunk 1 of 1 (`@@ -1,3 +1,3 @@`) does not apply: its 3 context and removed lines are not in the \
             file as written; the closest place is line 1 (2 of 3 lines match); line 2 of the file is \
             `    println!(\"hi\");` where the hunk expects `    println!(\"hello\");`\nThe patch was not applied: no \
             file was changed."
        )
    );
}

#[test]
fn apply_patch_tolerates_line_drift_and_renames_files() {
    let ws = workspace();
    let mut content: String = (1..=30).map(|n| format!("line {n}\n")).collect();
    write(ws.path(), "drift.txt", &content);
    // The header says line 10, the context is at line 20.
    let patch = "--- a/drift.txt\n+++ b/drift.txt\n@@ -10,3 +10,3 @@\n line 19\n-line 20\n+line twenty\n line 21\n\
                 diff --git a/drift.txt b/moved/drift.txt\nsimilarity index 100%\n\
                 rename from drift.txt\nrename to moved/drift.txt\n";
    let result = run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": patch }));
    assert_eq!(
        result,
        ToolResult::ok(
            "applied the patch:\n  modified drift.txt (1 hunk, +1 -1)\n  renamed drift.txt to moved/drift.txt\n"
        )
    );
    content = content.replace("line 20\n", "line twenty\n");
    assert_eq!(read(ws.path(), "moved/drift.txt"), content);
    assert!(!ws.path().join("drift.txt").exists());
}

#[test]
fn apply_patch_refuses_to_create_an_existing_file_or_change_a_missing_one() {
    let ws = workspace();
    write(ws.path(), "here.txt", "x\n");
    let create = "--- /dev/null\n+++ b/here.txt\n@@ -0,0 +1 @@\n+y\n";
    assert_eq!(
        run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": create })),
        ToolResult::error(
            "here.txt: the patch creates this file (`--- /dev/null`), but it already exists\nThe patch was not \
             applied: no file was changed."
        )
    );
    let change = "--- a/missing.txt\n+++ b/missing.txt\n@@ -1 +1 @@\n-x\n+y\n";
    assert_eq!(
        run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": change })),
        ToolResult::error(
            "missing.txt: the patch changes this file, but it does not exist in the workspace\nThe patch was not \
             applied: no file was changed."
        )
    );
    assert_eq!(read(ws.path(), "here.txt"), "x\n");
}

#[test]
fn apply_patch_keeps_file_permissions() {
    let ws = workspace();
    write(ws.path(), "run.sh", "#!/bin/sh\necho a\n");
    std::fs::set_permissions(ws.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let patch = "--- a/run.sh\n+++ b/run.sh\n@@ -2 +2 @@\n-echo a\n+echo b\n";
    assert!(!run(ws.path(), BuiltinTool::ApplyPatch, json!({ "patch": patch })).is_error);
    let mode = std::fs::metadata(ws.path().join("run.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    // No temporary file is left behind.
    let names: Vec<String> =
        std::fs::read_dir(ws.path()).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["run.sh"]);
}

fn ignored_tree(root: &Path) {
    write(root, ".gitignore", "target/\n*.log\n");
    write(root, "src/main.rs", "fn main() {\n    let needle = 1;\n}\n");
    write(root, "src/deep/mod.rs", "// Needle in a comment\n");
    write(root, "README.md", "a needle here\n");
    write(root, "target/debug/out.rs", "needle\n");
    write(root, "build.log", "needle\n");
    write(root, ".git/config", "needle\n");
    std::fs::write(root.join("blob.bin"), b"needle\0binary").unwrap();
}

#[test]
fn list_dir_shows_types_and_sizes_respecting_gitignore() {
    let ws = workspace();
    ignored_tree(ws.path());
    let listing = run(ws.path(), BuiltinTool::ListDir, json!({}));
    assert_eq!(
        listing.output,
        [
            "dir                -  .git/",
            "file              14  .gitignore",
            "file              14  README.md",
            "file              13  blob.bin",
            "dir                -  src/",
            "",
        ]
        .join("\n")
    );
    let deep = run(ws.path(), BuiltinTool::ListDir, json!({"path": "src", "depth": 2}));
    assert_eq!(
        deep.output,
        "dir                -  src/deep/\nfile              23  src/deep/mod.rs\nfile              34  src/main.rs\n"
    );
    let all = run(ws.path(), BuiltinTool::ListDir, json!({"depth": 3, "include_ignored": true}));
    let paths: Vec<&str> = all.output.lines().map(|line| line.rsplit("  ").next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            ".git/",
            ".gitignore",
            "README.md",
            "blob.bin",
            "build.log",
            "src/",
            "src/deep/",
            "src/deep/mod.rs",
            "src/main.rs",
            "target/",
            "target/debug/",
            "target/debug/out.rs",
        ]
    );
    assert!(run(ws.path(), BuiltinTool::ListDir, json!({"path": "nope"})).is_error);
}

#[test]
fn list_dir_stops_at_its_entry_cap_with_a_note() {
    let ws = workspace();
    for n in 0..1005 {
        std::fs::write(ws.path().join(format!("f{n:04}")), "").unwrap();
    }
    let listing = run(ws.path(), BuiltinTool::ListDir, json!({}));
    let lines: Vec<&str> = listing.output.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!(lines[999], "file               0  f0999");
    assert_eq!(lines[1000], "[listing stopped at 1000 entries; list a subdirectory or use a smaller depth]");
}

#[test]
fn search_respects_gitignore_and_skips_git_and_binary_files() {
    let ws = workspace();
    ignored_tree(ws.path());
    assert_eq!(
        run(ws.path(), BuiltinTool::Search, json!({"pattern": "needle"})),
        ToolResult::ok(
            "README.md:1: a needle here\nsrc/main.rs:2:     let needle = 1;\n[2 matching lines in 2 files]\n"
        )
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::Search, json!({"pattern": "needle", "case_insensitive": true, "path": "src"})),
        ToolResult::ok(
            "src/deep/mod.rs:1: // Needle in a comment\nsrc/main.rs:2:     let needle = 1;\n[2 matching lines in 2 \
             files]\n"
        )
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::Search, json!({"pattern": "(?i)needle", "glob": "*.rs"})).output,
        "src/deep/mod.rs:1: // Needle in a comment\nsrc/main.rs:2:     let needle = 1;\n[2 matching lines in 2 files]\n"
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::Search, json!({"pattern": "(?i)needle", "glob": "src/*.rs"})).output,
        "src/main.rs:2:     let needle = 1;\n[1 matching line in 1 file]\n"
    );
    assert_eq!(
        run(ws.path(), BuiltinTool::Search, json!({"pattern": "haystack"})),
        ToolResult::ok("no matches for /haystack/ in .\n")
    );
    // A file named directly is searched too.
    assert_eq!(
        run(ws.path(), BuiltinTool::Search, json!({"pattern": "needle", "path": "README.md"})).output,
        "README.md:1: a needle here\n[1 matching line in 1 file]\n"
    );
}

#[test]
fn search_stops_at_max_results_with_a_note() {
    let ws = workspace();
    write(ws.path(), "many.txt", &"hit\n".repeat(50));
    let result = run(ws.path(), BuiltinTool::Search, json!({"pattern": "hit", "max_results": 3}));
    assert_eq!(
        result.output,
        "many.txt:1: hit\nmany.txt:2: hit\nmany.txt:3: hit\n[search stopped at 3 matching lines; narrow it with a more \
         precise pattern, `path` or `glob`]\n"
    );
}

#[test]
fn the_shell_tool_does_not_run_outside_the_sandbox() {
    let ws = workspace();
    let result = run(ws.path(), BuiltinTool::Shell, json!({"command": "touch escaped"}));
    assert!(result.is_error);
    assert!(!ws.path().join("escaped").exists());
}

#[test]
fn for_model_cuts_long_output_with_a_note() {
    let output: String = (0..2000).map(|n| format!("{n}\n")).collect();
    let cut = for_model(&output, 1000);
    assert!(cut.len() <= 1000, "{}", cut.len());
    assert!(cut.starts_with("0\n1\n2\n"));
    assert!(cut.ends_with("1998\n1999\n"));
    assert!(cut.contains("bytes cut here; the full output is in the event log"), "{cut}");
    assert_eq!(for_model("short", 1000), "short");
}

// ---- through the sandbox ----

/// Skips (with the reason printed) on hosts that cannot run the sandbox.
fn sandbox_available() -> bool {
    let missing = &codexos_sandbox::host_capabilities().missing;
    if missing.is_empty() {
        return true;
    }
    eprintln!("skipped: this host lacks sandbox protections: {}", missing.join(", "));
    false
}

fn settings(workspace: &Path) -> SandboxSettings {
    SandboxSettings {
        workspace: workspace.to_owned(),
        runner: PathBuf::from("/nonexistent/codexos"),
        limits: Limits { timeout: Duration::from_secs(30), ..Limits::default() },
        network: NetworkPolicy::None,
        hidden_paths: Vec::new(),
        allow_missing_protections: false,
        output_limit_bytes: 64 * 1024,
        env: Vec::new(),
        redactor: Default::default(),
    }
}

async fn call(settings: &SandboxSettings, tool: BuiltinTool, arguments: serde_json::Value) -> ToolExecution {
    let invocation = parse_call(tool, &arguments.to_string()).unwrap();
    execute(&invocation, settings).await.unwrap()
}

#[tokio::test]
async fn shell_commands_write_the_workspace_and_report_their_output() {
    if !sandbox_available() {
        return;
    }
    let ws = workspace();
    std::fs::create_dir(ws.path().join("sub")).unwrap();
    let settings = settings(ws.path());
    let execution = call(
        &settings,
        BuiltinTool::Shell,
        json!({"command": "echo made > made.txt; pwd; echo note >&2", "workdir": "sub"}),
    )
    .await;
    assert_eq!(
        execution.output,
        format!("exit code: 0\n--- stdout ---\n{}\n--- stderr ---\nnote\n", ws.path().join("sub").display())
    );
    assert!(!execution.is_error);
    assert_eq!(execution.exit_code, Some(0));
    assert!(execution.violations.is_empty(), "{:?}", execution.violations);
    assert_eq!(read(ws.path(), "sub/made.txt"), "made\n");
    // The event log stores the execution as JSON.
    let logged = serde_json::to_value(&execution).unwrap();
    assert_eq!(logged["exit_code"], 0);
    assert!(logged["usage"]["wall_time"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_failing_command_is_an_error_with_its_exit_code() {
    if !sandbox_available() {
        return;
    }
    let ws = workspace();
    let execution = call(&settings(ws.path()), BuiltinTool::Shell, json!({"command": "echo oops >&2; exit 3"})).await;
    assert_eq!(execution.output, "exit code: 3\n--- stderr ---\noops\n");
    assert!(execution.is_error);
    assert_eq!(execution.exit_code, Some(3));
    let missing = call(&settings(ws.path()), BuiltinTool::Shell, json!({"command": "true", "workdir": "nope"})).await;
    assert_eq!(missing.output, "workdir nope is not a directory in the workspace");
    assert!(missing.is_error);
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_reported() {
    if !sandbox_available() {
        return;
    }
    let ws = workspace();
    let execution = call(
        &settings(ws.path()),
        BuiltinTool::Shell,
        json!({"command": "echo started; sleep 20", "timeout_seconds": 1}),
    )
    .await;
    assert!(execution.is_error);
    assert!(execution.violations.iter().any(|violation| violation.kind == ViolationKind::Timeout));
    assert!(execution.usage.wall_time < Duration::from_secs(10), "{:?}", execution.usage.wall_time);
    assert!(execution.output.contains("--- stdout ---\nstarted\n"), "{}", execution.output);
    assert!(execution.output.contains("[sandbox: timeout: still running after 1s; killed]"), "{}", execution.output);
}

#[tokio::test]
async fn long_output_is_kept_up_to_the_limit_with_head_and_tail() {
    if !sandbox_available() {
        return;
    }
    let ws = workspace();
    let mut settings = settings(ws.path());
    settings.output_limit_bytes = 2000;
    let execution = call(&settings, BuiltinTool::Shell, json!({"command": "seq 1 100000"})).await;
    assert!(!execution.is_error);
    assert!(execution.output.len() <= 2000, "{}", execution.output.len());
    assert!(execution.output.starts_with("exit code: 0\n--- stdout ---\n1\n2\n3\n"), "{}", execution.output);
    assert!(execution.output.contains("bytes cut here"), "{}", execution.output);
    // The sandbox kept only the first 2000 bytes of stdout, and says so.
    assert!(
        execution.output.contains("[stdout: the command wrote 588895 bytes; the sandbox kept the first 2000]"),
        "{}",
        execution.output
    );
    assert!(execution.violations.iter().any(|violation| violation.kind == ViolationKind::OutputLimit));
}

/// A stand-in for `codexos sandbox tool-runner`: echoes the request it got
/// inside the sandbox back as its output.
fn fake_runner(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("fake-codexos");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn non_shell_tools_run_the_runner_in_the_sandbox_with_a_json_request() {
    if !sandbox_available() {
        return;
    }
    let ws = workspace();
    let bin = tempfile::tempdir().unwrap();
    let mut settings = settings(ws.path());
    settings.runner = fake_runner(
        bin.path(),
        "#!/usr/bin/env python3\nimport json, sys\nrequest = json.load(sys.stdin)\n\
         print(json.dumps({'output': json.dumps({'argv': sys.argv[1:], 'request': request}), 'is_error': False}))\n",
    );
    let execution = call(&settings, BuiltinTool::ReadFile, json!({"path": "a.txt", "limit": 5})).await;
    assert!(!execution.is_error, "{}", execution.output);
    let echoed: serde_json::Value = serde_json::from_str(&execution.output).unwrap();
    assert_eq!(
        echoed,
        json!({
            "argv": ["sandbox", "tool-runner"],
            "request": {
                "workspace": ws.path(),
                "tool": "read_file",
                "arguments": {"path": "a.txt", "limit": 5},
                "output_limit_bytes": 64 * 1024,
            },
        })
    );
}

#[tokio::test]
async fn a_runner_that_dies_without_answering_is_a_failed_call() {
    if !sandbox_available() {
        return;
    }
    let ws = workspace();
    let bin = tempfile::tempdir().unwrap();
    let mut settings = settings(ws.path());
    settings.runner = fake_runner(bin.path(), "#!/bin/sh\necho 'runner broke' >&2\nexit 1\n");
    let execution = call(&settings, BuiltinTool::ListDir, json!({})).await;
    assert_eq!(
        execution.output,
        "the list_dir tool failed: its runner exited with code 1 without an answer\n--- stderr ---\nrunner broke\n"
    );
    assert!(execution.is_error);
    assert_eq!(execution.exit_code, Some(1));
}

#[tokio::test]
async fn a_missing_runner_means_the_sandbox_cannot_run() {
    let ws = workspace();
    let invocation = parse_call(BuiltinTool::ListDir, "{}").unwrap();
    let err = execute(&invocation, &settings(ws.path())).await.unwrap_err();
    assert!(matches!(err, ToolError::Sandbox { tool: BuiltinTool::ListDir, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the sandbox could not run the list_dir tool: read-only path /nonexistent/codexos: does not exist"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "read-only path /nonexistent/codexos: does not exist");
}

#[tokio::test]
async fn http_fetch_without_network_fails_clearly_without_running() {
    let ws = workspace();
    let execution = call(&settings(ws.path()), BuiltinTool::HttpFetch, json!({"url": "https://example.com/"})).await;
    assert!(execution.is_error);
    assert!(
        execution.output.starts_with("http_fetch needs network access, and this agent has none"),
        "{}",
        execution.output
    );
    assert_eq!(execution.exit_code, None);
}

proptest::proptest! {
    /// Whatever a model sends, parsing answers (and never panics); what it
    /// accepts as a path stays inside the workspace.
    #[test]
    fn parsing_any_arguments_answers(
        tool in proptest::sample::select(BuiltinTool::ALL.to_vec()),
        raw in concat!(
            r#"\{("(path|pattern|content|patch|url|command|workdir|glob|offset|depth|x)": "#,
            r#"("[^"\\]{0,12}"|[0-9]{1,3}|-1|true|null|\[\]),? ?){0,4}\}|[^{]{0,20}"#,
        ),
    ) {
        if let Ok(invocation) = parse_call(tool, &raw)
            && let Some(path) = invocation.arguments.get("path").and_then(|path| path.as_str())
        {
            let depth = Path::new(path).components().try_fold(0i32, |depth, component| match component {
                std::path::Component::ParentDir => (depth > 0).then_some(depth - 1),
                std::path::Component::Normal(_) => Some(depth + 1),
                std::path::Component::CurDir => Some(depth),
                _ => None,
            });
            proptest::prop_assert!(depth.is_some(), "{raw}");
        }
    }
}

#[tokio::test]
async fn shell_commands_get_their_secrets_and_their_output_is_redacted() {
    if !sandbox_available() {
        return;
    }
    const TOKEN: &str = "ghp_0123456789abcdefXYZ";
    let ws = workspace();
    let secrets = vec![("GH_TOKEN".to_owned(), secrecy::SecretString::from(TOKEN))];
    let with_secrets = SandboxSettings {
        env: vec![("GITHUB_TOKEN".to_owned(), secrecy::SecretString::from(TOKEN))],
        redactor: codexos_engine::Redactor::new(&secrets),
        output_limit_bytes: 4096,
        ..settings(ws.path())
    };
    let execution = call(
        &with_secrets,
        BuiltinTool::Shell,
        json!({"command": "echo \"token=$GITHUB_TOKEN\"; echo \"$GITHUB_TOKEN\" >&2; echo ${#GITHUB_TOKEN}"}),
    )
    .await;
    assert_eq!(
        execution.output,
        format!(
            "exit code: 0\n--- stdout ---\ntoken=[secret:GH_TOKEN]\n{}\n--- stderr ---\n[secret:GH_TOKEN]\n",
            TOKEN.len()
        )
    );
    // The sandbox cuts the stream in the middle of the value: its start
    // does not show either.
    let execution = call(
        &with_secrets,
        BuiltinTool::Shell,
        json!({"command": "head -c 4090 /dev/zero | tr '\\0' a; printf %s \"$GITHUB_TOKEN\""}),
    )
    .await;
    assert!(!execution.output.contains(&TOKEN[..6]), "{}", execution.output);
    assert!(execution.output.contains("[secret:GH_TOKEN]"), "{}", execution.output);
    // Without the secret in its settings, a command sees no such variable.
    let plain = settings(ws.path());
    let execution = call(&plain, BuiltinTool::Shell, json!({"command": "echo \"[${GITHUB_TOKEN:-unset}]\""})).await;
    assert!(execution.output.contains("[unset]"), "{}", execution.output);
}
