//! The input document a policy decides on (docs/policy.md, "The input").
//!
//! ```json
//! {
//!   "action": "tool_call",
//!   "tenant": {"id": "…", "slug": "acme"},
//!   "user": {"id": "…", "role": "developer"},
//!   "agent": {"name": "fixer", "version": "1.2.0", "kind": "llm", "publisher": null,
//!             "signature": {"status": "unsigned", "key_id": null},
//!             "tools": ["shell"], "network": ["pypi.org:443"], "mcp_hosts": [], "mcp_commands": []},
//!   "workspace": "/srv/work/repo",
//!   "step": 3,
//!   "tool": "shell",
//!   "args": {"command": "git push origin main"},
//!   "shell": {"raw": "git push origin main", "argv": ["git", "push", "origin", "main"],
//!             "commands": [["git", "push", "origin", "main"]], "substitution": false}
//! }
//! ```
//!
//! The facts about the tenant, the user, the agent and the workspace are
//! gathered once (per execution, or per request) as [`Facts`]; each
//! action adds its own fields.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::shell::ShellCommand;

/// What is being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An agent's tool call, before it runs.
    ToolCall,
    /// Registering an agent version (`POST /v1/agents`).
    InstallAgent,
    /// Starting an execution, or forking one.
    StartExecution,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ToolCall => "tool_call",
            Action::InstallAgent => "install_agent",
            Action::StartExecution => "start_execution",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantFacts {
    pub id: String,
    pub slug: String,
}

/// Who asked: for a tool call, the member who started the execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserFacts {
    /// The member's id; `None` for an API key not tied to a member.
    pub id: Option<String>,
    /// The caller's role (`owner`, `admin`, `developer`, `viewer`); `None`
    /// for tool calls, which run long after the request.
    pub role: Option<String>,
}

/// What the platform found of a manifest's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    /// No signature.
    Unsigned,
    /// Signed, the signature matches, and the tenant trusts the key.
    Verified,
    /// Signed and matching, by a key the tenant does not trust.
    Untrusted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    pub status: SignatureStatus,
    /// The signing key's id, when signed.
    pub key_id: Option<String>,
}

impl Signature {
    pub fn unsigned() -> Self {
        Self { status: SignatureStatus::Unsigned, key_id: None }
    }
}

/// The agent version concerned, from its manifest and registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentFacts {
    pub name: String,
    pub version: String,
    /// `llm` or `workflow`.
    pub kind: String,
    /// Who published it, as the platform knows the signing key.
    pub publisher: Option<String>,
    pub signature: Signature,
    /// The manifest's tool allow-list.
    pub tools: Vec<String>,
    /// `host:port` destinations its tool calls may reach (empty: none).
    pub network: Vec<String>,
    /// `host:port` of its MCP servers over HTTP, reached from the worker.
    pub mcp_hosts: Vec<String>,
    /// The command (argv) of each MCP server it starts in the sandbox:
    /// programs that run with its secrets before any tool call is asked.
    pub mcp_commands: Vec<Vec<String>>,
}

/// What stays the same across an execution's (or a request's) decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub tenant: TenantFacts,
    pub user: UserFacts,
    pub agent: AgentFacts,
    /// The workspace (an absolute path on the workers' hosts).
    pub workspace: Option<String>,
}

impl Facts {
    fn base(&self, action: Action) -> serde_json::Map<String, Value> {
        let mut input = serde_json::Map::new();
        input.insert("action".to_owned(), json!(action.as_str()));
        input.insert("tenant".to_owned(), json!(self.tenant));
        input.insert("user".to_owned(), json!(self.user));
        input.insert("agent".to_owned(), json!(self.agent));
        input.insert("workspace".to_owned(), json!(self.workspace));
        input
    }

    /// A tool call at `step`: the tool's name as the allow-list knows it
    /// (`shell`, `fs.read_file`), its arguments, and for `shell` the
    /// command parsed.
    pub fn tool_call(&self, tool: &str, args: &Value, step: u32) -> Value {
        let mut input = self.base(Action::ToolCall);
        input.insert("step".to_owned(), json!(step));
        input.insert("tool".to_owned(), json!(tool));
        input.insert("args".to_owned(), args.clone());
        let mut input = Value::Object(input);
        complete(&mut input);
        input
    }

    /// Registering the agent version.
    pub fn install_agent(&self) -> Value {
        Value::Object(self.base(Action::InstallAgent))
    }

    /// Starting an execution of the agent on `task`.
    pub fn start_execution(&self, task: &str) -> Value {
        let mut input = self.base(Action::StartExecution);
        input.insert("task".to_owned(), json!(task));
        Value::Object(input)
    }
}

/// Fills in what the platform derives from an input: for a `shell` call
/// whose `shell` is missing, the command parsed; for an `http_fetch` call
/// whose `destination` is missing, the URL's `host:port`. Inputs written
/// by hand (policy test cases) are completed the same way.
pub fn complete(input: &mut Value) {
    let Some(object) = input.as_object_mut() else { return };
    let tool = object.get("tool").and_then(Value::as_str);
    if tool == Some("http_fetch") && !object.contains_key("destination") {
        let destination =
            object.get("args").and_then(|args| args.get("url")).and_then(Value::as_str).and_then(destination);
        object.insert("destination".to_owned(), json!(destination));
        return;
    }
    if tool != Some("shell") || object.contains_key("shell") {
        return;
    }
    let shell = match object.get("args").and_then(|args| args.get("command")) {
        Some(Value::String(command)) => json!(ShellCommand::parse(command)),
        // Arguments the tool would refuse: nothing to parse, and nothing
        // that looks harmless either.
        _ => json!({ "raw": null, "argv": null, "commands": null, "substitution": false,
                     "error": "the call has no command string" }),
    };
    object.insert("shell".to_owned(), shell);
}

/// The `host:port` an http(s) URL reaches (the scheme's port when none is
/// given), lowercase; `None` when it is not such a URL. Parsed by the same
/// WHATWG rules the fetch itself follows, so that what the policy is
/// shown is where the request goes (`https://a\\@b/` goes to `a`).
pub fn destination(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = match parsed.host()? {
        url::Host::Domain(domain) => domain.to_ascii_lowercase(),
        url::Host::Ipv4(address) => address.to_string(),
        url::Host::Ipv6(address) => format!("[{address}]"),
    };
    Some(format!("{host}:{}", parsed.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    pub(crate) fn facts() -> Facts {
        Facts {
            tenant: TenantFacts { id: "t-1".into(), slug: "acme".into() },
            user: UserFacts { id: Some("u-1".into()), role: None },
            agent: AgentFacts {
                name: "fixer".into(),
                version: "1.0.0".into(),
                kind: "llm".into(),
                publisher: None,
                signature: Signature::unsigned(),
                tools: vec!["shell".into()],
                network: Vec::new(),
                mcp_hosts: Vec::new(),
                mcp_commands: Vec::new(),
            },
            workspace: Some("/srv/work/repo".into()),
        }
    }

    #[test]
    fn a_shell_call_carries_its_command_parsed() {
        let input = facts().tool_call("shell", &json!({"command": "git push origin main"}), 3);
        assert_eq!(
            input,
            json!({
                "action": "tool_call",
                "tenant": {"id": "t-1", "slug": "acme"},
                "user": {"id": "u-1", "role": null},
                "agent": {"name": "fixer", "version": "1.0.0", "kind": "llm", "publisher": null,
                          "signature": {"status": "unsigned", "key_id": null}, "tools": ["shell"], "network": [],
                          "mcp_hosts": [], "mcp_commands": []},
                "workspace": "/srv/work/repo",
                "step": 3,
                "tool": "shell",
                "args": {"command": "git push origin main"},
                "shell": {"raw": "git push origin main", "argv": ["git", "push", "origin", "main"],
                          "commands": [["git", "push", "origin", "main"]], "substitution": false}
            })
        );
    }

    #[test]
    fn other_calls_and_actions_have_no_shell() {
        let input = facts().tool_call("read_file", &json!({"path": "a"}), 1);
        assert!(input.get("shell").is_none());
        assert_eq!(facts().install_agent()["action"], "install_agent");
        assert!(facts().install_agent().get("tool").is_none());
        assert_eq!(facts().start_execution("fix it")["task"], "fix it");
    }

    #[test]
    fn a_fetch_carries_its_destination() {
        let input = facts().tool_call("http_fetch", &json!({"url": "https://User@Registry.Example.com/simple/x"}), 2);
        assert_eq!(input["destination"], "registry.example.com:443");
        for (url, expected) in [
            ("http://example.com", Some("example.com:80")),
            ("http://example.com:8080/x?y#z", Some("example.com:8080")),
            ("https://[::1]:9000/", Some("[::1]:9000")),
            ("https://[::1]/", Some("[::1]:443")),
            ("ftp://example.com", None),
            ("https://example.com:99999", None),
            ("https://:80", None),
            ("nonsense", None),
            // Where the request really goes, however the URL is written.
            ("https://evil.example\\@allowed.example/", Some("evil.example:443")),
            ("https:evil.example/", Some("evil.example:443")),
            (" https://Evil.Example", Some("evil.example:443")),
            ("https://user:pw@allowed.example:8443/x", Some("allowed.example:8443")),
        ] {
            assert_eq!(destination(url).as_deref(), expected, "{url}");
        }
        let odd = facts().tool_call("http_fetch", &json!({"url": 3}), 2);
        assert_eq!(odd["destination"], Value::Null);
    }

    #[test]
    fn a_shell_call_without_a_command_string_is_marked_unparsed() {
        let input = facts().tool_call("shell", &json!({"command": 42}), 1);
        assert_eq!(input["shell"]["argv"], Value::Null);
        assert_eq!(input["shell"]["commands"], Value::Null);
        let mut written = json!({"tool": "shell", "args": {"command": "ls"}, "shell": {"raw": "given"}});
        complete(&mut written);
        assert_eq!(written["shell"]["raw"], "given", "a given `shell` is kept");
    }
}
