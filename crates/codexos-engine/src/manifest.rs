//! Agent manifests: the TOML document that says what an agent is, which
//! model drives it, which tools it may call and within which limits.
//!
//! Parsing never stops at the first mistake: every problem is collected with
//! the key it concerns, so an author fixes a manifest in one round trip.
//! docs/manifest.md documents every key.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use codexos_core::{ModelEndpoint, SecretName};
use codexos_sandbox::{Destination, NetworkPolicy};
use serde::Serialize;

use crate::mcp::McpServerSpec;
use crate::memory::MemoryTool;
use crate::model::Provider;
use crate::tools::BuiltinTool;

/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// An agent's name: 1 to 63 characters of `[a-z0-9-]`, starting with a
/// letter or digit; unique per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid_chars = text.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if text.is_empty() || text.len() > 63 || !valid_chars || text.starts_with('-') || text.ends_with('-') {
            return Err(format!(
                "'{}' is not a valid agent name (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-')",
                text.chars().take(64).collect::<String>()
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentManifest {
    pub name: AgentName,
    pub version: semver::Version,
    pub description: String,
    pub kind: AgentKind,
    /// The tools the agent may call; anything else is denied.
    pub tools: Vec<String>,
    pub limits: ManifestLimits,
    /// How long notes stored with `remember` are kept.
    pub memory_retention: Duration,
    /// MCP servers whose tools the agent may call (`[[mcp]]`).
    pub mcp: Vec<McpServerSpec>,
    /// Which calls wait for a person's approval before they run.
    pub approval: ApprovalRules,
    /// Tenant secrets given to the tool calls as environment variables
    /// (`[secrets]`: `VARIABLE = "SECRET_NAME"`), in variable order.
    pub secrets: Vec<SecretBinding>,
    /// The publisher's signature (`[signature]`), checked for its form
    /// here; whether it holds is `signing::verify_signature`'s question.
    pub signature: Option<crate::signing::ManifestSignature>,
}

/// One entry of `[secrets]`: the environment variable the shell commands
/// and stdio MCP servers of the execution see, and the tenant secret that
/// holds its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretBinding {
    pub variable: String,
    pub secret: SecretName,
}

/// The most entries `[secrets]` may have.
pub const MAX_SECRET_BINDINGS: usize = 64;

/// Variables the sandbox sets itself, which a secret must not replace.
const RESERVED_VARIABLES: [&str; 12] = [
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "PAGER",
    "GIT_PAGER",
    "TERM",
    "NO_COLOR",
];

/// Calls that need a person's approval (`[approval]`): every call of the
/// listed tools, and `shell` calls whose command matches one of the
/// patterns (globs: `*` any text, `?` one character).
#[derive(Debug, Clone, Default)]
pub struct ApprovalRules {
    pub tools: Vec<String>,
    pub shell: Vec<String>,
    shell_matcher: Option<globset::GlobSet>,
}

impl PartialEq for ApprovalRules {
    fn eq(&self, other: &Self) -> bool {
        self.tools == other.tools && self.shell == other.shell
    }
}

impl ApprovalRules {
    /// Why the call needs approval, if it does.
    pub fn needs_approval(&self, tool: &str, arguments: &serde_json::Value) -> Option<String> {
        if let Some(listed) = self.tools.iter().find(|listed| crate::mcp::allow_entry_matches(listed, tool)) {
            return Some(format!("every call of {listed} needs approval"));
        }
        let command = arguments["command"].as_str().filter(|_| tool == "shell")?;
        let matcher = self.shell_matcher.as_ref()?;
        let matched = matcher.matches(command.trim());
        let pattern = matched.first().and_then(|index| self.shell.get(*index))?;
        Some(format!("the command matches the approval pattern '{pattern}'"))
    }
}

/// Notes are kept this long unless the manifest says otherwise.
pub const DEFAULT_MEMORY_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The longest retention a manifest may ask for: ten years.
const MAX_MEMORY_RETENTION: Duration = Duration::from_secs(3650 * 24 * 3600);

#[derive(Debug, Clone, PartialEq)]
pub enum AgentKind {
    /// Driven by a model: it decides which tools to call.
    Llm(LlmAgent),
    /// Declared steps, run in order under the same guardrails.
    Workflow(Workflow),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmAgent {
    /// The system prompt.
    pub instructions: String,
    pub model: ModelSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub provider: Provider,
    pub name: String,
    pub base_url: String,
    pub api_key: Option<ApiKeySource>,
    pub stream: bool,
    pub max_output_tokens: u32,
    pub temperature: Option<f32>,
    /// The model's context size in tokens; the session is compacted before
    /// it fills.
    pub context_window: u64,
    pub request_timeout: Duration,
    pub max_retries: u32,
}

/// Where the model's API key comes from. The key itself never appears in a
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeySource {
    /// An environment variable of the worker process.
    Env(String),
    /// A tenant secret, by name.
    Secret(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub steps: Vec<WorkflowStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowStep {
    /// A label for the timeline; defaults to the tool's name.
    pub name: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    /// Whether a failed step lets the workflow go on (the execution still
    /// reports the failure in its outcome).
    pub continue_on_error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManifestLimits {
    /// Model turns (llm) or steps (workflow) at most.
    pub max_steps: u32,
    /// Wall-clock time for the whole execution.
    pub timeout: Duration,
    /// CPU time for all tool calls together.
    pub cpu_seconds: u64,
    /// Memory of one tool call's process tree.
    pub memory_bytes: u64,
    /// Processes of one tool call.
    pub pids: u64,
    /// Wall-clock time of one tool call.
    pub tool_timeout: Duration,
    /// How much of a tool's output the model sees; the event log keeps more.
    pub tool_output_bytes: usize,
    pub network: NetworkPolicy,
}

impl Default for ManifestLimits {
    fn default() -> Self {
        Self {
            max_steps: 30,
            timeout: Duration::from_secs(15 * 60),
            cpu_seconds: 300,
            memory_bytes: 1 << 30,
            pids: 256,
            tool_timeout: Duration::from_secs(120),
            tool_output_bytes: 16 * 1024,
            network: NetworkPolicy::None,
        }
    }
}

/// One thing wrong with a manifest: the key (a dotted path such as
/// `model.provider` or `steps[1].tool`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

/// Everything wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {}", self.problems.iter().map(|p| format!("{}: {}", p.key, p.reason)).collect::<Vec<_>>().join("; "))]
pub struct ManifestError {
    pub problems: Vec<Problem>,
}

impl AgentManifest {
    /// Parses and validates a manifest, reporting every problem found.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(single("(manifest)", format!("is {} bytes; the limit is {MAX_MANIFEST_BYTES}", text.len())));
        }
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            let reason = err.message().to_owned();
            let at = err.span().map(|span| line_and_column(text, span.start));
            single(
                "(syntax)",
                match at {
                    Some((line, column)) => format!("line {line}, column {column}: {reason}"),
                    None => reason,
                },
            )
        })?;
        let mut problems = Vec::new();
        let manifest = read_manifest(Fields::new(&table, "", &mut problems));
        match manifest {
            Some(manifest) if problems.is_empty() => Ok(manifest),
            _ => Err(ManifestError { problems }),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            AgentKind::Llm(_) => "llm",
            AgentKind::Workflow(_) => "workflow",
        }
    }

    /// A key that sorts versions by semver precedence as plain text, so the
    /// store can find the newest version with an index.
    pub fn version_key(&self) -> String {
        version_key(&self.version)
    }

    /// Whether `tool` (a built-in or memory tool, or an MCP tool as
    /// `server.tool`) is allowed: listed, or its server listed as `server.*`.
    pub fn allows(&self, tool: &str) -> bool {
        self.tools.iter().any(|allowed| crate::mcp::allow_entry_matches(allowed, tool))
    }
}

impl AgentManifest {
    /// Checks the model against the servers the operator allows: the
    /// manifest's `base_url` must be one of them, and its `api_key_env`
    /// the variable the operator bound to that server. Workflow agents pass.
    pub fn check_model_endpoint(&self, endpoints: &[ModelEndpoint]) -> Result<(), Problem> {
        let AgentKind::Llm(llm) = &self.kind else { return Ok(()) };
        let problem = |key: &str, reason: String| Problem { key: key.to_owned(), reason };
        let url = reqwest::Url::parse(&llm.model.base_url)
            .map_err(|err| problem("model.base_url", format!("not a URL: {err}")))?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(problem("model.base_url", "has no host".to_owned()));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Some(endpoint) = endpoints.iter().find(|endpoint| endpoint.matches(host, port)) else {
            return Err(problem(
                "model.base_url",
                format!(
                    "{host}:{port} is not a model server this installation allows (the operator lists them in model_endpoints)"
                ),
            ));
        };
        match &llm.model.api_key {
            Some(ApiKeySource::Env(variable)) if endpoint.key_env.as_deref() != Some(variable.as_str()) => {
                Err(problem(
                    "model.api_key_env",
                    match &endpoint.key_env {
                        Some(allowed) => format!("the key for {} is {allowed}, not {variable}", endpoint.host),
                        None => format!("no key variable is configured for {}", endpoint.host),
                    },
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Zero-padded numbers, then `1` for a release, or `0` and the pre-release
/// identifiers, which sorts a pre-release before its release. Identifiers
/// are joined with a space, which sorts below every character they may hold;
/// numeric ones are zero-padded and marked to sort below alphanumeric ones,
/// as semver precedence has it.
pub fn version_key(version: &semver::Version) -> String {
    let release = if version.pre.is_empty() {
        "1".to_owned()
    } else {
        let identifiers: Vec<String> = version
            .pre
            .split('.')
            .map(|identifier| match identifier.parse::<u64>() {
                Ok(number) if identifier.bytes().all(|b| b.is_ascii_digit()) => format!("0{number:020}"),
                _ => format!("1{identifier}"),
            })
            .collect();
        format!("0{}", identifiers.join(" "))
    };
    format!("{:020}.{:020}.{:020}.{release}", version.major, version.minor, version.patch)
}

fn single(key: &str, reason: String) -> ManifestError {
    ManifestError { problems: vec![Problem { key: key.to_owned(), reason }] }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |rest| rest.chars().count()) + 1;
    (line, column)
}

fn read_manifest(mut fields: Fields<'_, '_>) -> Option<AgentManifest> {
    let name = fields.string("name", true).and_then(|name| fields.check("name", AgentName::parse(&name)));
    let version = fields.string("version", true).and_then(|text| {
        let parsed = semver::Version::parse(&text).map_err(|err| format!("'{text}' is not a semantic version: {err}"));
        fields.check("version", parsed)
    });
    let kind = fields.string("kind", true);
    let description = fields.string("description", false).unwrap_or_default();
    let instructions = fields.string("instructions", false);
    let mcp = match fields.array_of_tables("mcp") {
        Some(tables) => {
            let (servers, problems) = crate::mcp::read_servers(&tables);
            fields.problems.extend(problems);
            servers
        }
        None => Vec::new(),
    };
    let tools = fields.table("tools").map_or_else(Vec::new, |tools| read_tools(tools, &mcp));
    let limits = fields.table("limits").map_or_else(ManifestLimits::default, |limits| read_limits(limits));
    let model = fields.table("model").and_then(|model| read_model(model));
    let memory_retention = fields.table("memory").map_or(Some(DEFAULT_MEMORY_RETENTION), |memory| read_memory(memory));
    let approval =
        fields.table("approval").map_or(Some(ApprovalRules::default()), |approval| read_approval(approval, &tools));
    let secrets = fields.table("secrets").map_or_else(Vec::new, |secrets| read_secrets(secrets));
    let signature = fields.table("signature").map(|signature| read_signature(signature));
    let has_model = fields.has("model");
    let steps = fields.array_of_tables("steps");

    let kind = match kind.as_deref() {
        Some("llm") => {
            if !has_model {
                fields.problem("model", "an llm agent needs a [model] table");
            }
            if steps.is_some() {
                fields.problem("steps", "only workflow agents have steps");
            }
            model.map(|model| AgentKind::Llm(LlmAgent { instructions: instructions.unwrap_or_default(), model }))
        }
        Some("workflow") => {
            if has_model {
                fields.problem("model", "a workflow agent has no model");
            }
            if instructions.is_some() {
                fields.problem("instructions", "a workflow agent has no instructions");
            }
            if !mcp.is_empty() {
                fields.problem("mcp", "only llm agents connect MCP servers");
            }
            match steps {
                None => {
                    fields.problem("steps", "a workflow agent needs at least one [[steps]] entry");
                    None
                }
                Some(steps) => {
                    read_steps(&mut fields, &steps, &tools).map(|steps| AgentKind::Workflow(Workflow { steps }))
                }
            }
        }
        Some(other) => {
            fields.problem("kind", format!("'{other}' is not a kind of agent (expected \"llm\" or \"workflow\")"));
            None
        }
        None => None,
    };
    if let Some(AgentKind::Workflow(workflow)) = &kind
        && workflow.steps.len() > limits.max_steps as usize
    {
        fields.problem(
            "limits.max_steps",
            format!("is {}, fewer than the workflow's {} steps", limits.max_steps, workflow.steps.len()),
        );
    }
    fields.finish();
    Some(AgentManifest {
        name: name?,
        version: version?,
        description,
        kind: kind?,
        tools,
        limits,
        memory_retention: memory_retention?,
        mcp,
        approval: approval?,
        secrets,
        signature: match signature {
            None => None,
            Some(read) => Some(read?),
        },
    })
}

/// `[signature]`: all three keys, each checked for its form. `Some(None)`
/// when a key is wrong (its problem is recorded).
fn read_signature(mut fields: Fields<'_, '_>) -> Option<crate::signing::ManifestSignature> {
    let publisher = fields.string("publisher", true).and_then(|text| {
        let parsed = codexos_core::PublisherKeyId::parse(&text).map_err(|err| format!("{err}"));
        fields.check("publisher", parsed)
    });
    let algorithm = fields
        .string("algorithm", true)
        .and_then(|text| fields.check("algorithm", crate::signing::check_algorithm(&text)));
    let value = fields
        .string("value", true)
        .and_then(|text| fields.check("value", crate::signing::decode_signature_value(&text)));
    fields.finish();
    algorithm?;
    Some(crate::signing::ManifestSignature { publisher: publisher?, value: value? })
}

fn read_secrets(mut fields: Fields<'_, '_>) -> Vec<SecretBinding> {
    let table = fields.table;
    if table.len() > MAX_SECRET_BINDINGS {
        let key = fields.prefix.clone();
        fields
            .problems
            .push(Problem { key, reason: format!("has {} entries; the limit is {MAX_SECRET_BINDINGS}", table.len()) });
    }
    let mut bindings = Vec::new();
    for (variable, value) in table {
        fields.take(variable);
        let valid_name = variable.bytes().next().is_some_and(|byte| byte.is_ascii_alphabetic() || byte == b'_')
            && variable.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
            && variable.len() <= 128;
        if !valid_name {
            fields.problem(variable, "is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128)");
            continue;
        }
        let upper = variable.to_ascii_uppercase();
        if RESERVED_VARIABLES.contains(&upper.as_str()) || upper.starts_with("LD_") {
            fields.problem(variable, "is set by the sandbox itself and cannot hold a secret");
            continue;
        }
        match value {
            toml::Value::String(name) => match SecretName::parse(name) {
                Ok(secret) => bindings.push(SecretBinding { variable: variable.clone(), secret }),
                Err(err) => fields.problem(variable, err.to_string()),
            },
            other => fields.problem(variable, format!("must be a secret's name (a string), not {}", other.type_str())),
        }
    }
    fields.finish();
    bindings
}

fn read_approval(mut fields: Fields<'_, '_>, allowed: &[String]) -> Option<ApprovalRules> {
    let tools = fields.string_array("tools").unwrap_or_default();
    for (index, tool) in tools.iter().enumerate() {
        // `server.*` or `server.tool`: held if tools.allow lets the agent call it at all.
        let allowed_somehow = allowed.iter().any(|allowed| {
            allowed == tool
                || crate::mcp::allow_entry_matches(allowed, tool)
                || tool.strip_suffix(".*").is_some_and(|server| allowed.starts_with(&format!("{server}.")))
        });
        if !allowed_somehow {
            fields.problem(&format!("tools[{index}]"), format!("'{tool}' is not in tools.allow"));
        }
    }
    let shell = fields.string_array("shell").unwrap_or_default();
    let mut builder = globset::GlobSetBuilder::new();
    let mut valid = true;
    for (index, pattern) in shell.iter().enumerate() {
        // `*` matches any text, slashes included: commands are not paths.
        match globset::GlobBuilder::new(pattern).literal_separator(false).build() {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(err) => {
                fields.problem(&format!("shell[{index}]"), format!("'{pattern}' is not a pattern: {}", err.kind()));
                valid = false;
            }
        }
    }
    fields.finish();
    let shell_matcher = if shell.is_empty() || !valid { None } else { builder.build().ok() };
    valid.then_some(ApprovalRules { tools, shell, shell_matcher })
}

fn read_tools(mut fields: Fields<'_, '_>, mcp: &[McpServerSpec]) -> Vec<String> {
    let allow = fields.string_array("allow").unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (index, tool) in allow.iter().enumerate() {
        if let Some(checked) = crate::mcp::check_allow_entry(tool, mcp) {
            match checked {
                Err(reason) => fields.problem(&format!("allow[{index}]"), reason),
                Ok(()) if !seen.insert(tool.as_str()) => {
                    fields.problem(&format!("allow[{index}]"), format!("'{tool}' is listed twice"));
                }
                Ok(()) => {}
            }
        } else if BuiltinTool::from_name(tool).is_none() && MemoryTool::from_name(tool).is_none() {
            let known: Vec<&str> = BuiltinTool::ALL
                .iter()
                .map(|tool| tool.name())
                .chain(MemoryTool::ALL.iter().map(|tool| tool.name()))
                .collect();
            fields.problem(&format!("allow[{index}]"), format!("unknown tool '{tool}' (known: {})", known.join(", ")));
        } else if !seen.insert(tool.as_str()) {
            fields.problem(&format!("allow[{index}]"), format!("'{tool}' is listed twice"));
        }
    }
    fields.finish();
    allow
}

fn read_limits(mut fields: Fields<'_, '_>) -> ManifestLimits {
    let defaults = ManifestLimits::default();
    let max_steps = fields.integer("max_steps", 1, 10_000).map_or(defaults.max_steps, |n| n as u32);
    let timeout = fields.duration("timeout").unwrap_or(defaults.timeout);
    let cpu_seconds = fields.integer("cpu_seconds", 1, 7 * 24 * 3600).map_or(defaults.cpu_seconds, |n| n as u64);
    let memory_bytes = fields.size("memory", 16 << 20).unwrap_or(defaults.memory_bytes);
    let pids = fields.integer("pids", 8, 65_536).map_or(defaults.pids, |n| n as u64);
    let tool_timeout = fields.duration("tool_timeout").unwrap_or(defaults.tool_timeout);
    let tool_output_bytes = fields.size("tool_output", 1024).map_or(defaults.tool_output_bytes, |n| n as usize);
    let network = read_network(&mut fields).unwrap_or(NetworkPolicy::None);
    fields.finish();
    ManifestLimits { max_steps, timeout, cpu_seconds, memory_bytes, pids, tool_timeout, tool_output_bytes, network }
}

fn read_memory(mut fields: Fields<'_, '_>) -> Option<Duration> {
    let retention = match fields.string("retention", false) {
        None => Some(DEFAULT_MEMORY_RETENTION),
        Some(text) => match humantime::parse_duration(&text) {
            Ok(duration) if duration >= Duration::from_secs(3600) && duration <= MAX_MEMORY_RETENTION => Some(duration),
            Ok(_) => {
                fields.problem("retention", format!("'{text}' must be between 1h and 3650d"));
                None
            }
            Err(err) => {
                fields.problem("retention", format!("'{text}' is not a duration like 30d: {err}"));
                None
            }
        },
    };
    fields.finish();
    retention
}

fn read_network(fields: &mut Fields<'_, '_>) -> Option<NetworkPolicy> {
    let value = fields.take("network")?;
    match value {
        toml::Value::String(text) if text == "none" => Some(NetworkPolicy::None),
        toml::Value::Table(table) => {
            let mut problems = Vec::new();
            let mut inner = Fields::new(table, &fields.path("network"), &mut problems);
            let allow = inner.string_array("allow");
            let mut destinations = Vec::new();
            match allow {
                None if !inner.has("allow") => inner.problem("allow", "a list of \"host:port\" is required"),
                None => {}
                Some(list) => {
                    for (index, entry) in list.iter().enumerate() {
                        match Destination::parse(entry) {
                            Ok(destination) => destinations.push(destination),
                            Err(err) => inner.problem(&format!("allow[{index}]"), err.to_string()),
                        }
                    }
                }
            }
            inner.finish();
            let ok = problems.is_empty();
            fields.problems.extend(problems);
            ok.then_some(NetworkPolicy::Allow(destinations))
        }
        _ => {
            fields.problem("network", "must be \"none\" or { allow = [\"host:port\", ...] }");
            None
        }
    }
}

fn read_model(mut fields: Fields<'_, '_>) -> Option<ModelSpec> {
    let provider = fields.string("provider", true).and_then(|text| {
        let parsed =
            text.parse::<Provider>().map_err(|_| format!("'{text}' is not a provider (\"openai\" or \"anthropic\")"));
        fields.check("provider", parsed)
    });
    let name = fields.string("name", true);
    let base_url = fields.string("base_url", false);
    if let Some(url) = &base_url {
        // Never quoted back: a URL may carry a password.
        match reqwest::Url::parse(url) {
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                fields.problem("base_url", "must not carry a user name or password (keys go in api_key_env)")
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => fields.problem("base_url", "is not an http(s) URL"),
        }
    }
    let api_key_env = fields.string("api_key_env", false);
    let api_key_secret = fields.string("api_key_secret", false);
    let api_key = match (api_key_env, api_key_secret) {
        (Some(_), Some(_)) => {
            fields.problem("api_key_env", "give api_key_env or api_key_secret, not both");
            None
        }
        (Some(var), None) => Some(ApiKeySource::Env(var)),
        (None, Some(secret)) => match SecretName::parse(&secret) {
            Ok(_) => Some(ApiKeySource::Secret(secret)),
            Err(err) => {
                fields.problem("api_key_secret", err.to_string());
                None
            }
        },
        (None, None) => None,
    };
    if let Some(ApiKeySource::Env(var)) = &api_key {
        let valid = !var.is_empty()
            && var.len() <= 128
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            fields.problem(
                "api_key_env",
                format!("'{var}' is not a variable or secret name ([A-Za-z0-9_-], at most 128)"),
            );
        }
    }
    let stream = fields.boolean("stream").unwrap_or(true);
    let max_output_tokens = fields.integer("max_output_tokens", 1, 1_000_000).map_or(4096, |n| n as u32);
    let temperature = fields.float("temperature", 0.0, 2.0).map(|t| t as f32);
    let context_window = fields.integer("context_window", 1024, 100_000_000).map_or(128_000, |n| n as u64);
    let request_timeout = fields.duration("request_timeout").unwrap_or(Duration::from_secs(300));
    let max_retries = fields.integer("max_retries", 0, 20).map_or(3, |n| n as u32);
    fields.finish();
    let provider = provider?;
    let base_url = base_url.unwrap_or_else(|| match provider {
        Provider::OpenAi => "https://api.openai.com/v1".to_owned(),
        Provider::Anthropic => "https://api.anthropic.com".to_owned(),
    });
    Some(ModelSpec {
        provider,
        name: name?,
        base_url,
        api_key,
        stream,
        max_output_tokens,
        temperature,
        context_window,
        request_timeout,
        max_retries,
    })
}

fn read_steps(fields: &mut Fields<'_, '_>, steps: &[toml::Table], allowed: &[String]) -> Option<Vec<WorkflowStep>> {
    if steps.is_empty() {
        fields.problem("steps", "a workflow agent needs at least one [[steps]] entry");
        return None;
    }
    let mut read = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let mut problems = Vec::new();
        let path = format!("{}[{index}]", fields.path("steps"));
        let mut inner = Fields::new(step, &path, &mut problems);
        let tool = inner.string("tool", true);
        let name = inner.string("name", false);
        let continue_on_error = inner.boolean("continue_on_error").unwrap_or(false);
        let arguments = match inner.take("args") {
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(toml::Value::Table(table)) => match serde_json::to_value(table) {
                Ok(json) => json,
                Err(err) => {
                    inner.problem("args", format!("cannot be read as JSON: {err}"));
                    serde_json::Value::Null
                }
            },
            Some(_) => {
                inner.problem("args", "must be a table of the tool's arguments");
                serde_json::Value::Null
            }
        };
        if let Some(tool) = &tool {
            match BuiltinTool::from_name(tool) {
                None => inner.problem("tool", format!("unknown tool '{tool}'")),
                Some(builtin) => {
                    if !allowed.iter().any(|allowed| allowed == tool) {
                        inner.problem("tool", format!("'{tool}' is not in tools.allow"));
                    }
                    if arguments.is_object()
                        && let Err(err) = crate::tools::parse_call(builtin, &arguments.to_string())
                    {
                        inner.problem("args", err.to_string());
                    }
                }
            }
        }
        inner.finish();
        let ok = problems.is_empty();
        fields.problems.extend(problems);
        if let (true, Some(tool)) = (ok, tool) {
            read.push(WorkflowStep { name: name.unwrap_or_else(|| tool.clone()), tool, arguments, continue_on_error });
        }
    }
    (read.len() == steps.len()).then_some(read)
}

/// Reads the keys of one TOML table, recording a problem for each missing,
/// mistyped or invalid value, and (at `finish`) for each unknown key.
struct Fields<'t, 'p> {
    table: &'t toml::Table,
    prefix: String,
    seen: BTreeSet<&'t str>,
    problems: &'p mut Vec<Problem>,
}

impl<'t, 'p> Fields<'t, 'p> {
    fn new(table: &'t toml::Table, prefix: &str, problems: &'p mut Vec<Problem>) -> Self {
        Self { table, prefix: prefix.to_owned(), seen: BTreeSet::new(), problems }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_owned() } else { format!("{}.{key}", self.prefix) }
    }

    fn problem(&mut self, key: &str, reason: impl Into<String>) {
        let key = self.path(key);
        self.problems.push(Problem { key, reason: reason.into() });
    }

    fn check<T>(&mut self, key: &str, res: Result<T, String>) -> Option<T> {
        res.map_err(|reason| self.problem(key, reason)).ok()
    }

    fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    fn take(&mut self, key: &str) -> Option<&'t toml::Value> {
        let (name, value) = self.table.get_key_value(key)?;
        self.seen.insert(name.as_str());
        Some(value)
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.take(key) {
            None => {
                if required {
                    self.problem(key, "is required");
                }
                None
            }
            Some(toml::Value::String(text)) => Some(text.clone()),
            Some(other) => {
                self.problem(key, format!("must be a string, not {}", other.type_str()));
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            toml::Value::Boolean(value) => Some(*value),
            other => {
                self.problem(key, format!("must be true or false, not {}", other.type_str()));
                None
            }
        }
    }

    fn integer(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        match self.take(key)? {
            toml::Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            toml::Value::Integer(n) => {
                self.problem(key, format!("{n} is out of range ({min} to {max})"));
                None
            }
            other => {
                self.problem(key, format!("must be an integer, not {}", other.type_str()));
                None
            }
        }
    }

    fn float(&mut self, key: &str, min: f64, max: f64) -> Option<f64> {
        let value = match self.take(key)? {
            toml::Value::Float(x) => *x,
            toml::Value::Integer(n) => *n as f64,
            other => {
                self.problem(key, format!("must be a number, not {}", other.type_str()));
                return None;
            }
        };
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.problem(key, format!("{value} is out of range ({min} to {max})"));
            None
        }
    }

    /// A duration such as `15m` or `30s`, at least a second.
    fn duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.string(key, false)?;
        match humantime::parse_duration(&text) {
            Ok(duration) if duration >= Duration::from_secs(1) && duration <= Duration::from_secs(7 * 24 * 3600) => {
                Some(duration)
            }
            Ok(_) => {
                self.problem(key, format!("'{text}' must be between 1s and 7d"));
                None
            }
            Err(err) => {
                self.problem(key, format!("'{text}' is not a duration like 30s or 15m: {err}"));
                None
            }
        }
    }

    /// A size such as `1GiB` or `512M` (an integer is bytes), at least `min`.
    fn size(&mut self, key: &str, min: u64) -> Option<u64> {
        let parsed = match self.take(key)? {
            toml::Value::String(text) => codexos_core::parse_size(text).map_err(|err| err.to_string()),
            toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
            other => Err(format!("must be a size like \"512M\", not {}", other.type_str())),
        };
        match parsed {
            Ok(bytes) if bytes >= min => Some(bytes),
            Ok(bytes) => {
                self.problem(key, format!("{bytes} bytes is below the minimum of {min}"));
                None
            }
            Err(reason) => {
                self.problem(key, reason);
                None
            }
        }
    }

    fn string_array(&mut self, key: &str) -> Option<Vec<String>> {
        match self.take(key)? {
            toml::Value::Array(items) => {
                let mut strings = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::String(text) => strings.push(text.clone()),
                        other => self
                            .problem(&format!("{key}[{index}]"), format!("must be a string, not {}", other.type_str())),
                    }
                }
                Some(strings)
            }
            other => {
                self.problem(key, format!("must be a list of strings, not {}", other.type_str()));
                None
            }
        }
    }

    fn table(&mut self, key: &str) -> Option<Fields<'t, '_>> {
        match self.take(key)? {
            toml::Value::Table(table) => {
                let prefix = self.path(key);
                Some(Fields::new(table, &prefix, self.problems))
            }
            other => {
                self.problem(key, format!("must be a table, not {}", other.type_str()));
                None
            }
        }
    }

    fn array_of_tables(&mut self, key: &str) -> Option<Vec<toml::Table>> {
        match self.take(key)? {
            toml::Value::Array(items) => {
                let mut tables = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::Table(table) => tables.push(table.clone()),
                        other => self
                            .problem(&format!("{key}[{index}]"), format!("must be a table, not {}", other.type_str())),
                    }
                }
                Some(tables)
            }
            other => {
                self.problem(key, format!("must be a list of tables ([[{key}]]), not {}", other.type_str()));
                None
            }
        }
    }

    /// Records every key that nothing read.
    fn finish(self) {
        for key in self.table.keys().filter(|key| !self.seen.contains(key.as_str())) {
            let path = if self.prefix.is_empty() { key.clone() } else { format!("{}.{key}", self.prefix) };
            self.problems.push(Problem { key: path, reason: "unknown key".to_owned() });
        }
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
