//! The arguments of each built-in tool: one serde struct per tool, from which
//! both the parser and the JSON schema offered to the model are derived, so
//! the two cannot drift apart. Checks serde cannot express (paths inside the
//! workspace, a valid regex, an http URL) follow in `validate`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::patch::{self, Patch};
use super::{ArgumentError, BuiltinTool};

/// Lines `read_file` returns when the call does not say.
pub(crate) const DEFAULT_READ_LINES: u64 = 2000;
/// Matches `search` returns when the call does not say, and the most it may ask for.
pub(crate) const DEFAULT_SEARCH_RESULTS: u32 = 200;
pub(crate) const MAX_SEARCH_RESULTS: u32 = 2000;
/// The deepest `list_dir` goes.
pub(crate) const MAX_LIST_DEPTH: u32 = 20;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShellArgs {
    /// The command line, run by `/bin/sh -c`.
    pub command: String,
    /// Directory to run in, relative to the workspace. Default: the workspace root.
    pub workdir: Option<String>,
    /// Seconds after which the command is killed. Default and maximum: the agent's sandbox timeout.
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadFileArgs {
    /// File to read, relative to the workspace.
    pub path: String,
    /// Line to start at, counting from 1. Default: 1.
    #[schemars(range(min = 1))]
    pub offset: Option<u64>,
    /// Most lines to return. Default: 2000.
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteFileArgs {
    /// File to write, relative to the workspace. Missing parent directories are created.
    pub path: String,
    /// The complete new content of the file.
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyPatchArgs {
    /// A unified diff (`--- a/path`, `+++ b/path`, `@@ -l,n +l,n @@` hunks); may change several files.
    pub patch: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListDirArgs {
    /// Directory to list, relative to the workspace. Default: the workspace root.
    pub path: Option<String>,
    /// How many levels to descend: 1 lists only the directory's own entries. Default: 1.
    #[schemars(range(min = 1, max = 20))]
    pub depth: Option<u32>,
    /// Also list entries that .gitignore excludes. Default: false.
    pub include_ignored: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchArgs {
    /// Regular expression (Rust `regex` syntax), matched against each line.
    pub pattern: String,
    /// File or directory to search, relative to the workspace. Default: the whole workspace.
    pub path: Option<String>,
    /// Only files matching this glob: `*.rs` matches file names anywhere, `src/**/*.rs` paths from the workspace root.
    pub glob: Option<String>,
    /// Match letters regardless of case. Default: false.
    pub case_insensitive: Option<bool>,
    /// Most matching lines to return. Default: 200.
    #[schemars(range(min = 1, max = 2000))]
    pub max_results: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFetchArgs {
    /// The http:// or https:// URL to request.
    pub url: String,
    /// HTTP method. Default: GET.
    pub method: Option<HttpMethod>,
    /// Extra request headers, name to value.
    pub headers: Option<BTreeMap<String, String>>,
    /// Request body, sent as given (set a content-type header to match).
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// A tool's arguments, parsed and validated.
#[derive(Debug)]
pub(crate) enum ToolArgs {
    Shell(ShellArgs),
    ReadFile(ReadFileArgs),
    WriteFile(WriteFileArgs),
    /// The patch as parsed during validation, so it is parsed once.
    ApplyPatch(Patch),
    ListDir(ListDirArgs),
    Search(SearchArgs),
    HttpFetch(HttpFetchArgs),
}

/// Parses and validates `value` as the arguments of `tool`.
pub(crate) fn parse(tool: BuiltinTool, value: serde_json::Value) -> Result<ToolArgs, ArgumentError> {
    let kind = match &value {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Null => Some("null"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Array(_) => Some("an array"),
    };
    if let Some(kind) = kind {
        return Err(ArgumentError::NotAnObject(kind));
    }
    Ok(match tool {
        BuiltinTool::Shell => {
            let args: ShellArgs = deserialize(value)?;
            if args.command.trim().is_empty() {
                return Err(ArgumentError::Empty("command"));
            }
            if let Some(workdir) = &args.workdir {
                workspace_path("workdir", workdir)?;
            }
            if args.timeout_seconds == Some(0) {
                return Err(ArgumentError::OutOfRange { field: "timeout_seconds", reason: "must be at least 1" });
            }
            ToolArgs::Shell(args)
        }
        BuiltinTool::ReadFile => {
            let args: ReadFileArgs = deserialize(value)?;
            required_file_path("path", &args.path)?;
            if args.offset == Some(0) {
                return Err(ArgumentError::OutOfRange { field: "offset", reason: "counts lines from 1" });
            }
            if args.limit == Some(0) {
                return Err(ArgumentError::OutOfRange { field: "limit", reason: "must be at least 1" });
            }
            ToolArgs::ReadFile(args)
        }
        BuiltinTool::WriteFile => {
            let args: WriteFileArgs = deserialize(value)?;
            required_file_path("path", &args.path)?;
            ToolArgs::WriteFile(args)
        }
        BuiltinTool::ApplyPatch => {
            let args: ApplyPatchArgs = deserialize(value)?;
            ToolArgs::ApplyPatch(patch::parse(&args.patch).map_err(ArgumentError::InvalidPatch)?)
        }
        BuiltinTool::ListDir => {
            let args: ListDirArgs = deserialize(value)?;
            if let Some(path) = &args.path {
                workspace_path("path", path)?;
            }
            if let Some(depth) = args.depth
                && !(1..=MAX_LIST_DEPTH).contains(&depth)
            {
                return Err(ArgumentError::OutOfRange { field: "depth", reason: "must be between 1 and 20" });
            }
            ToolArgs::ListDir(args)
        }
        BuiltinTool::Search => {
            let args: SearchArgs = deserialize(value)?;
            if args.pattern.is_empty() {
                return Err(ArgumentError::Empty("pattern"));
            }
            search_regex(&args).map_err(|err| ArgumentError::InvalidRegex(err.to_string()))?;
            if let Some(path) = &args.path {
                workspace_path("path", path)?;
            }
            if let Some(glob) = &args.glob {
                search_glob(glob).map_err(|err| ArgumentError::InvalidGlob(err.to_string()))?;
            }
            if let Some(max) = args.max_results
                && !(1..=MAX_SEARCH_RESULTS).contains(&max)
            {
                return Err(ArgumentError::OutOfRange { field: "max_results", reason: "must be between 1 and 2000" });
            }
            ToolArgs::Search(args)
        }
        BuiltinTool::HttpFetch => {
            let args: HttpFetchArgs = deserialize(value)?;
            http_url(&args.url)?;
            for (name, value) in args.headers.iter().flatten() {
                let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && reqwest::header::HeaderValue::from_str(value).is_ok();
                if !valid {
                    return Err(ArgumentError::InvalidHeader(name.chars().take(100).collect()));
                }
            }
            if args.body.is_some() && matches!(args.method, None | Some(HttpMethod::Get | HttpMethod::Head)) {
                return Err(ArgumentError::OutOfRange {
                    field: "body",
                    reason: "needs a method that takes one (POST, PUT, PATCH or DELETE)",
                });
            }
            ToolArgs::HttpFetch(args)
        }
    })
}

/// Deserializes with the failing field named ("offset: invalid type ...").
fn deserialize<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ArgumentError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        // An unknown field's path is the field itself, which the message names already.
        let named_already = path == "." || inner.starts_with("unknown field");
        ArgumentError::Mismatch(if named_already { inner } else { format!("{path}: {inner}") })
    })
}

/// `path` as a normalised path relative to the workspace (empty for the
/// workspace itself). The sandbox is the real barrier; this check is for a
/// clear message before anything runs.
pub(crate) fn workspace_path(field: &'static str, path: &str) -> Result<PathBuf, ArgumentError> {
    let shown = || path.chars().take(300).collect::<String>();
    if path.contains('\0') {
        return Err(ArgumentError::InvalidPath { field, path: shown(), reason: "contains a NUL byte" });
    }
    if Path::new(path).is_absolute() {
        return Err(ArgumentError::AbsolutePath { field, path: shown() });
    }
    let mut normalised = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => normalised.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normalised.pop() {
                    return Err(ArgumentError::EscapingPath { field, path: shown() });
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArgumentError::AbsolutePath { field, path: shown() });
            }
        }
    }
    Ok(normalised)
}

/// Like [`workspace_path`], for a path that must name a file: not empty and
/// not the workspace itself.
pub(crate) fn required_file_path(field: &'static str, path: &str) -> Result<PathBuf, ArgumentError> {
    if path.trim().is_empty() {
        return Err(ArgumentError::Empty(field));
    }
    let normalised = workspace_path(field, path)?;
    if normalised.as_os_str().is_empty() {
        return Err(ArgumentError::InvalidPath {
            field,
            path: path.chars().take(300).collect(),
            reason: "names the workspace itself, not a file in it",
        });
    }
    Ok(normalised)
}

pub(crate) fn search_regex(args: &SearchArgs) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&args.pattern)
        .case_insensitive(args.case_insensitive.unwrap_or(false))
        .size_limit(16 * 1024 * 1024)
        .build()
}

/// The glob matcher and whether it applies to whole paths (a `/` in the
/// glob) or to file names.
pub(crate) fn search_glob(glob: &str) -> Result<(globset::GlobMatcher, bool), globset::Error> {
    let whole_path = glob.contains('/');
    let matcher = globset::GlobBuilder::new(glob.trim_start_matches("./"))
        .literal_separator(whole_path)
        .build()?
        .compile_matcher();
    Ok((matcher, whole_path))
}

pub(crate) fn http_url(url: &str) -> Result<reqwest::Url, ArgumentError> {
    let invalid = |reason: String| ArgumentError::InvalidUrl { url: url.chars().take(300).collect(), reason };
    let parsed = reqwest::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("the scheme is `{}`; only http and https are fetched", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    Ok(parsed)
}

/// The JSON schema of `tool`'s arguments, as offered to the model: derived
/// from the struct above, inlined, without the meta-schema and title, and
/// with optional fields as plain types (not "or null"), which every
/// provider's schema dialect understands.
pub(crate) fn schema(tool: BuiltinTool) -> serde_json::Value {
    match tool {
        BuiltinTool::Shell => schema_of::<ShellArgs>(),
        BuiltinTool::ReadFile => schema_of::<ReadFileArgs>(),
        BuiltinTool::WriteFile => schema_of::<WriteFileArgs>(),
        BuiltinTool::ApplyPatch => schema_of::<ApplyPatchArgs>(),
        BuiltinTool::ListDir => schema_of::<ListDirArgs>(),
        BuiltinTool::Search => schema_of::<SearchArgs>(),
        BuiltinTool::HttpFetch => schema_of::<HttpFetchArgs>(),
    }
}

/// The JSON schema of a tool's argument struct, as offered to models:
/// inlined, without titles, null types or integer formats.
pub(crate) fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|settings| {
        settings.meta_schema = None;
        settings.inline_subschemas = true;
    });
    let mut schema = settings.into_generator().into_root_schema_for::<T>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.remove("title");
        // The struct's own doc comment; the tool's description says it better.
        object.remove("description");
        // Every tool has a property list, even an empty one.
        object.entry("required").or_insert_with(|| serde_json::Value::Array(Vec::new()));
    }
    simplify(&mut schema);
    schema
}

/// Drops `null` alternatives and integer `format`s (`uint64`, which some
/// providers reject) throughout a schema.
fn simplify(value: &mut serde_json::Value) {
    let serde_json::Value::Object(object) = value else { return };
    if let Some(serde_json::Value::Array(types)) = object.get_mut("type") {
        types.retain(|kind| kind != "null");
        if types.len() == 1 {
            let single = types.remove(0);
            object.insert("type".to_owned(), single);
        }
    }
    if let Some(serde_json::Value::Array(values)) = object.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }
    if let Some(serde_json::Value::Array(alternatives)) = object.get("anyOf") {
        let not_null: Vec<serde_json::Value> = alternatives
            .iter()
            .filter(|alternative| alternative.get("type").is_none_or(|t| t != "null"))
            .cloned()
            .collect();
        if let [only] = not_null.as_slice()
            && let Some(only) = only.as_object()
        {
            object.remove("anyOf");
            for (key, value) in only {
                object.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    if object.get("type").is_some_and(|kind| kind == "integer") {
        object.remove("format");
    }
    for child in object.values_mut() {
        match child {
            serde_json::Value::Object(_) => simplify(child),
            serde_json::Value::Array(items) => items.iter_mut().for_each(simplify),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_inside_the_workspace() {
        assert_eq!(workspace_path("path", "src/./lib.rs").unwrap(), PathBuf::from("src/lib.rs"));
        assert_eq!(workspace_path("path", "src/../Cargo.toml").unwrap(), PathBuf::from("Cargo.toml"));
        assert_eq!(workspace_path("path", ".").unwrap(), PathBuf::new());
        assert!(matches!(workspace_path("path", "src/../../x"), Err(ArgumentError::EscapingPath { .. })));
        assert!(matches!(workspace_path("path", "/etc/passwd"), Err(ArgumentError::AbsolutePath { .. })));
        assert!(matches!(required_file_path("path", "."), Err(ArgumentError::InvalidPath { .. })));
    }

    #[test]
    fn schemas_have_no_null_types_formats_or_titles() {
        for tool in BuiltinTool::ALL {
            let text = schema(tool).to_string();
            for unwanted in ["\"null\"", "\"format\"", "\"title\"", "$schema", "$ref", "$defs"] {
                assert!(!text.contains(unwanted), "{tool}: {unwanted} in {text}");
            }
        }
    }
}
